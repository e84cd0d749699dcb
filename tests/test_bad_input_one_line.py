"""Input that used to pass --dry-run, or end in a traceback, is now one line and exit 2, before anything loads."""

import json
import os
import shutil
import stat

import pytest

from conftest import BIN, clean_env, run, unprivileged

LFKIT = BIN / "lfkit"


def lfkit(*args, home=None, privileged=True):
    env = clean_env(**({"LFKIT_HOME": str(home)} if home else {}))
    cmd = [str(LFKIT), *map(str, args)]
    return run(cmd if privileged else unprivileged(cmd), env=env)


def one_line(result) -> str:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfkit: error: "), result.stderr[-3000:]
    return lines[0]


RANGES = {
    "num_train_epochs=-1": "num_train_epochs=-1.0 must be greater than 0",
    "lora_rank=0": "lora_rank=0 must be 1 or more",
    "cutoff_len=0": "cutoff_len=0 must be 1 or more",
    "learning_rate=-1": "learning_rate=-1.0 must be greater than 0",
    "per_device_train_batch_size=0": "per_device_train_batch_size=0 must be 1 or more",
    "max_steps=-5": "max_steps=-5 must be 1 to 2147483647, or -1 for no limit",
    "learning_rate=inf": "learning_rate=inf must be a finite number",
    "max_grad_norm=nan": "max_grad_norm=nan must be a finite number",
    # these passed the dry-run, and the run failed after the model loaded (an OverflowError traceback)
    "seed=-1": "seed=-1 must be 0 to 4294967295 (numpy's seed range)",
    "max_steps=99999999999999999999": "max_steps=99999999999999999999 must be 1 to 2147483647, or -1 for no limit",
}


@pytest.mark.parametrize(
    "assignment, line",
    [
        ("quantization_bit=3", "step train: quantization_bit=3: bitsandbytes quantizes to 4 or 8 bits"),
        ("lora_target=q_proj,qkv", "step train: lora_target names qkv, which {model} does not have; its modules "
         "with weights: down_proj, embed_tokens, gate_proj, input_layernorm, k_proj, lm_head, norm, o_proj, "
         "post_attention_layernorm, q_proj, up_proj, v_proj (or lora_target=all)"),
        ("output_dir={file}", "output_dir {file} is a file; give a folder"),
    ],
)  # fmt: skip
def test_what_llamafactory_refuses_after_loading_stops_the_dry_run(assignment, line, tmp_path, tiny_llama):
    """LLaMA-Factory refuses these only once the model has loaded; the dry-run, and the run, before."""
    file = tmp_path / "a-file"
    file.write_text("mine")
    args = [f"output_dir={tmp_path / 'out'}", assignment.format(file=file)]
    got = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", *args, "--dry-run"))
    assert got == "lfkit: error: " + line.format(model=tiny_llama, file=file)
    assert file.read_text() == "mine"


@pytest.mark.parametrize("assignment", list(RANGES))
def test_values_out_of_range_stop_the_dry_run(assignment, tmp_path, tiny_llama):
    line = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                          f"output_dir={tmp_path / 'out'}", assignment, "--dry-run"))  # fmt: skip
    assert line == f"lfkit: error: recipe sft-lora-single, step train: {RANGES[assignment]}"


@pytest.mark.parametrize("content", ["gbk", "binary"])
def test_a_config_file_that_is_not_utf8_text(content, tmp_path, tiny_llama):
    config = tmp_path / "extra.yaml"
    if content == "gbk":
        config.write_bytes("# 学习率\nlearning_rate: 1.0e-4\n".encode("gbk"))
    else:
        config.write_bytes(bytes(range(256)) * 4)
    line = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                          f"output_dir={tmp_path / 'out'}", "--config", config, "--dry-run"))  # fmt: skip
    assert line.startswith(f"lfkit: error: --config {config}: not UTF-8 text (byte ")


@pytest.fixture
def model_copy(tmp_path, tiny_llama):
    return shutil.copytree(tiny_llama, tmp_path / "model")


def test_a_corrupt_config_json(model_copy, tmp_path):
    (model_copy / "config.json").write_text('{"model_type": "llama",')
    line = one_line(lfkit("run", "sft-lora-single", f"model={model_copy}", "dataset=telecom_demo",
                          f"output_dir={tmp_path / 'out'}", "--dry-run"))  # fmt: skip
    assert line.startswith(f"lfkit: error: model {model_copy}: config.json is corrupt (")
    assert one_line(lfkit("models", "detect", model_copy)).startswith("lfkit: error: model ")


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"hidden_size": "big"}, 'config.json has hidden_size: "big", not a whole number above 0'),
        ({"num_hidden_layers": -2}, "config.json has num_hidden_layers: -2, not a whole number above 0"),
        ([], "config.json is corrupt (not a JSON object)"),
        ("str", "config.json is corrupt (not a JSON object)"),
    ],
)
def test_a_config_json_with_sizes_that_cannot_be_meant(config, problem, model_copy, tmp_path):
    """The same line from the plan and the dry run (one check), before a model loads."""
    if isinstance(config, dict):
        config = {**json.loads((model_copy / "config.json").read_text()), **config}
    (model_copy / "config.json").write_text(json.dumps(config))
    args = ["sft-lora-single", f"model={model_copy}", "dataset=telecom_demo"]
    expected = f"lfkit: error: model {model_copy}: {problem}"
    assert one_line(lfkit("run", *args, f"output_dir={tmp_path / 'out'}", "--dry-run")) == expected
    assert one_line(lfkit("plan", *args)) == expected
    assert not (tmp_path / "out").exists()


def test_a_card_of_no_memory(tiny_llama):
    line = one_line(lfkit("plan", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", "gpu_memory=0"))
    assert line == "lfkit: error: gpu_memory=0: must be above 0"


def test_truncated_safetensors(model_copy, tmp_path):
    weights = next(model_copy.glob("*.safetensors"))
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    line = one_line(lfkit("run", "sft-lora-single", f"model={model_copy}", "dataset=telecom_demo",
                          f"output_dir={tmp_path / 'out'}", "--dry-run"))  # fmt: skip
    assert line.startswith(f"lfkit: error: model {model_copy}: {weights.name} is corrupt: truncated (")


def test_a_corrupt_adapter(tmp_path, tiny_llama):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    line = one_line(lfkit("run", "merge-lora", f"model={tiny_llama}", f"adapter={adapter}",
                          f"output_dir={tmp_path / 'merged'}", "--dry-run"))  # fmt: skip
    assert line.startswith(f"lfkit: error: adapter {adapter}: adapter_model.safetensors is corrupt: ")


def test_a_registered_dataset_whose_file_is_gone(tmp_path, tiny_llama):
    home, data = tmp_path / "home", tmp_path / "mine.json"
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    assert lfkit("data", "add", "mine", data, home=home).returncode == 0
    data.unlink()
    line = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=mine",
                          f"output_dir={tmp_path / 'out'}", "--dry-run", home=home))  # fmt: skip
    assert line == (
        f"lfkit: error: dataset 'mine': its file {data} is gone; put it back, or `lfkit data remove mine` "
        "and register it again"
    )
    # one the user's own dataset_info.json names: `lfkit data remove` knows nothing of it
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"own": {"file_name": str(data)}}))
    line = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", "dataset=own", f"dataset_dir={folder}",
                          f"output_dir={tmp_path / 'out'}", "--dry-run", home=home))  # fmt: skip
    assert line == (
        f"lfkit: error: dataset 'own': its file {data} is gone; put it back, or mend its entry in "
        f"{folder / 'dataset_info.json'}"
    )


def test_a_registry_entry_that_clashes_with_a_bundled_name_can_be_removed(tmp_path):
    """doctor names `lfkit data remove NAME` as the fix; that command refused ("comes from lfkit.dataset_registry")."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "datasets.json").write_text(json.dumps({"telecom_demo": {"file": "/x.json", "formatting": "alpaca"},
                                                    "mine": {"file": "/y.json", "formatting": "alpaca"}}))  # fmt: skip
    removed = lfkit("data", "remove", "telecom_demo", home=home)
    assert removed.returncode == 0, removed.stderr
    assert json.loads((home / "datasets.json").read_text()) == {"mine": {"file": "/y.json", "formatting": "alpaca"}}
    listed = {d["name"]: d for d in json.loads(lfkit("datasets", "--json", home=home).stdout)}
    assert listed["telecom_demo"]["origin"] == "bundled"  # the bundled dataset is untouched
    assert one_line(lfkit("data", "remove", "telecom_demo", home=home)).startswith(
        "lfkit: error: dataset 'telecom_demo' comes from"
    )


def test_a_sharegpt_row_without_an_assistant_turn(tmp_path):
    data = tmp_path / "chat.json"
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            {"conversations": [{"from": "human", "value": "only a question"}]}]  # fmt: skip
    data.write_text(json.dumps(rows))
    line = one_line(lfkit("data", "add", "chat", data, "--formatting", "sharegpt", home=tmp_path / "home"))
    assert line == f"lfkit: error: {data}: row 2: no assistant turn answers the last user turn ('gpt')"


def test_a_tiny_model_with_a_read_only_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = one_line(lfkit("run", "sft-lora-single", "model=tiny:llama", "dataset=telecom_demo",
                              f"output_dir={tmp_path / 'out'}", "--dry-run", home=home, privileged=False))  # fmt: skip
    finally:
        home.chmod(0o755)
    assert line.startswith(f"lfkit: error: model=tiny:llama: cannot build the tiny model under {home} (")
    assert line.endswith("); set LFKIT_HOME to a folder you can write")


@pytest.mark.parametrize("how", ["run", "dry-run of a folder inside"])
def test_a_read_only_output_dir(how, tmp_path, tiny_llama):
    out = tmp_path / "out"
    out.mkdir()
    target = out if how == "run" else out / "run"
    flag = "max_steps=1" if how == "run" else "--dry-run"
    common = ["sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", f"output_dir={target}"]
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = one_line(lfkit("run", *common, flag, privileged=False))
        planned = lfkit("plan", *common, privileged=False)  # a plan writes nothing: nothing to refuse there
    finally:
        out.chmod(0o755)
    assert line == f"lfkit: error: output_dir {target}: cannot write there (Permission denied)"
    assert os.listdir(out) == []
    assert planned.returncode == 0, planned.stderr[-2000:]


@pytest.mark.parametrize("where", ["a file", "read-only"])
def test_prepare_out_that_cannot_be_written(where, tmp_path):
    from telecom_tables import raw_rows, write_csv

    source = write_csv(tmp_path / "raw.csv", raw_rows())
    out = tmp_path / "splits"
    if where == "a file":
        out.write_text("x")
    else:
        out.mkdir()
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = one_line(lfkit("data", "prepare", "telecom", source, "--out", out, "--train-sizes", "100",
                              home=tmp_path / "home", privileged=where == "a file"))  # fmt: skip
    finally:
        if out.is_dir():
            out.chmod(0o755)
    expected = "is a file; give a folder" if where == "a file" else "cannot write there (Permission denied)"
    assert line.startswith(f"lfkit: error: --out {out}") and expected in line
    assert not (tmp_path / "home" / "datasets.json").exists()


@pytest.fixture
def data_beside(tmp_path):
    """Datasets registered by hand in a dataset_dir (LLaMA-Factory's own way), not through `lfkit data add`."""
    data = tmp_path / "data"
    data.mkdir()
    good = [{"instruction": "what is 5G?", "input": "", "output": "the fifth generation"}] * 4
    (data / "good.json").write_text(json.dumps(good), encoding="utf-8")
    (data / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode())  # "UTF-8" from a Windows editor
    (data / "ints.json").write_text(json.dumps([{"instruction": 1, "input": "", "output": 2}] * 4), encoding="utf-8")
    info = {name: {"file_name": f"{name}.json"} for name in ("good", "bom", "ints")}
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return data


@pytest.mark.parametrize(
    "dataset, cause",
    [("bom", "DatasetGenerationError: An error occurred while generating the dataset (ValueError: "),
     ("ints", "TypeError: sequence item 0: expected str instance, int found")],
)  # fmt: skip
def test_data_llamafactory_cannot_load_stops_the_dry_run_the_plan_and_the_run(dataset, cause, data_beside,
                                                                               tmp_path, tiny_llama):  # fmt: skip
    """The dry-run said "could not be tokenized here" in its plan and exited 0; the run then failed in its step."""
    args = ["sft-lora-single", f"model={tiny_llama}", f"dataset={dataset}", f"dataset_dir={data_beside}"]
    out = f"output_dir={tmp_path / 'out'}"
    expected = f"lfkit: error: LLaMA-Factory cannot load dataset {dataset}: {cause}"
    assert one_line(lfkit("run", *args, out, "--dry-run")).startswith(expected)
    assert one_line(lfkit("plan", *args)).startswith(expected)
    # the run makes the same check wherever it plans (a card, or gpu_memory= for one), before its step starts
    assert one_line(lfkit("run", *args, out, "gpu_memory=16GiB", "max_steps=1")).startswith(expected)
    assert not (tmp_path / "out").exists()
    fine = lfkit("run", *args[:2], "dataset=good", f"dataset_dir={data_beside}", out, "--dry-run")
    assert fine.returncode == 0, fine.stderr[-2000:]


def test_an_eval_dataset_the_eval_step_cannot_read_stops_the_dry_run(data_beside, tmp_path, tiny_llama):
    """The eval step reads its rows itself: a row without the field its formatting names was a KeyError
    traceback after the model loaded (in a sweep, after every variant had trained), a hub dataset the same."""
    (data_beside / "asked.json").write_text(json.dumps([{"question": "5G?", "output": "yes"}]), encoding="utf-8")
    info = json.loads((data_beside / "dataset_info.json").read_text())
    info.update({"asked": {"file_name": "asked.json"}, "hub": {"hf_hub_url": "someone/telecom"}})
    (data_beside / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    for dataset, said in [("asked", "dataset 'asked', row 1: no field 'instruction' (its fields: question, output)"),
                          ("hub", "dataset 'hub' is not a local file; lfkit eval reads local files only")]:  # fmt: skip
        line = one_line(lfkit("run", "eval-telecom", f"model={tiny_llama}", f"dataset={dataset}",
                              f"dataset_dir={data_beside}", f"output_dir={tmp_path / 'out'}", "--dry-run"))  # fmt: skip
        assert line == f"lfkit: error: {said}"
    sweep = one_line(lfkit("sweep", "sft-lora-single", f"model={tiny_llama}", "dataset=good",
                           f"dataset_dir={data_beside}", "--grid", "learning_rate=1e-4,2e-4", "--eval", "asked",
                           "-o", tmp_path / "sweep"))  # fmt: skip
    assert sweep.endswith("no field 'instruction' (its fields: question, output)")
    assert not (tmp_path / "sweep").exists()


def test_what_a_plan_reads_beside_the_model_never_hangs_it(tmp_path, tiny_llama, model_copy):
    """A FIFO config.json or tokenizer_config.json hung plan and dry-run; a damaged length cache in lfkit's
    home, or a dataset_info.json that is a list, ended them in a traceback."""
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "sequence-lengths.json").write_text(json.dumps([1]))
    args = ["dataset=telecom_demo", f"output_dir={tmp_path / 'out'}", "--dry-run"]
    fine = lfkit("run", "sft-lora-single", f"model={tiny_llama}", *args, home=home)
    assert fine.returncode == 0, fine.stderr[-2000:]
    cache = json.loads((home / "cache" / "sequence-lengths.json").read_text())
    (key,) = cache
    (home / "cache" / "sequence-lengths.json").write_text(json.dumps({key: {"tokens": "x", "samples": [1]}}))
    again = lfkit("run", "sft-lora-single", f"model={tiny_llama}", *args, home=home)
    assert again.returncode == 0 and "tokenized (cached)" not in again.stderr, again.stderr[-2000:]
    listed = tmp_path / "data"
    listed.mkdir()
    (listed / "dataset_info.json").write_text("[1, 2]")
    line = one_line(lfkit("run", "sft-lora-single", f"model={tiny_llama}", *args, f"dataset_dir={listed}", home=home))
    assert "dataset_info.json" in line and "not a JSON object" in line, line
    (model_copy / "tokenizer_config.json").unlink()
    os.mkfifo(model_copy / "tokenizer_config.json")
    fifo = run(
        [str(LFKIT), "run", "sft-lora-single", f"model={model_copy}", *args],
        env=clean_env(LFKIT_HOME=str(home)),
        timeout=120,
    )
    assert "Traceback" not in fifo.stderr, fifo.stderr[-2000:]
    (model_copy / "config.json").unlink()
    os.mkfifo(model_copy / "config.json")
    line = one_line(lfkit("run", "sft-lora-single", f"model={model_copy}", *args, home=home))
    assert line.startswith(f"lfkit: error: model {model_copy}") and "config.json" in line, line


# Not a both-stacks test (as the ROCm fixes are): the refusal is lfkit's own, the same on every stack.
def test_real_work_under_simulation_is_refused_and_records_no_platform_it_did_not_run_on(tiny_llama, tmp_path):
    """A simulation decides as on the simulated card (fp16, its fixes) while the work would run here: a run
    made under it was recorded as rocm with fp16: true while it trained on the CPU. Only checking is simulated."""
    env = clean_env(LFKIT_SIMULATE="rocm:gfx906")
    base = [LFKIT, "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", "max_steps=1"]
    refused = run([*base, f"output_dir={tmp_path / 'run'}"], env=env)
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("lfkit: error: LFKIT_SIMULATE=rocm:gfx906 only checks what would happen on rocm")
    assert "add --dry-run to check it, or unset LFKIT_SIMULATE to run it here" in line
    assert not (tmp_path / "run").exists()
    checked = run([*base, f"output_dir={tmp_path / 'run'}", "--dry-run"], env=env)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["steps"][0]["args"]["fp16"] is True  # what the card would get, only shown
    sweep = run([LFKIT, "sweep", *base[2:],
                 "--grid", "learning_rate=1e-4,2e-4", "--eval", "telecom_demo_test", "-o", tmp_path / "sweep"],
                env=env)  # fmt: skip
    assert sweep.returncode == 2 and "every variant would take place on this machine" in sweep.stderr
    assert "--dry-run to check it" not in sweep.stderr  # a sweep has none to offer
    assert not (tmp_path / "sweep").exists()
    # LLaMA-Factory's own command on the same YAML: the fixes in its process were chosen for gfx906
    yaml_file = tmp_path / "train.yaml"
    exported = run([LFKIT, "recipes", "export", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                    "max_steps=1", f"output_dir={tmp_path / 'lf'}", "-o", yaml_file])  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    plain = run([BIN / "llamafactory-cli", "train", yaml_file], env=env)
    assert plain.returncode == 2
    assert "lfkit: error: LFKIT_SIMULATE=rocm:gfx906 only checks" in plain.stderr
    assert "loading the model would take place on this machine, deciding and recording as rocm: unset" in plain.stderr
    assert not (tmp_path / "lf" / "adapter_model.safetensors").exists()
    assert run([BIN / "llamafactory-cli", "train", yaml_file]).returncode == 0  # unset: it trains here

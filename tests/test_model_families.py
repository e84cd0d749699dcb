"""Model families: detection on tiny models of every family, defaults in real runs, consent, the family mends."""

import hashlib
import json

import pytest

from conftest import BIN, clean_env, probe, run, write_alpaca

pytestmark = pytest.mark.both_stacks
LFKIT = BIN / "lfkit"
QUICK = ["max_steps=1", "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "cutoff_len=64",
         "logging_steps=1"]  # fmt: skip
EXPECTED = {
    # fixture: (family, template, lora_target, remote code)
    "tiny_llama": ("llama2", "llama2", "q_proj,v_proj", False),
    "tiny_gemma": ("gemma", "gemma", "q_proj,v_proj", False),
    "tiny_baichuan2_spm": ("baichuan2", "baichuan2", "W_pack", True),
    "tiny_chatglm3": ("chatglm3", "chatglm3", "query_key_value", True),
}


def lfkit(*args, env=None, **kwargs):
    return run([LFKIT, *args], env=env or clean_env(), **kwargs)


def test_models_lists_the_four_builtin_families():
    result = lfkit("models", "--json")
    assert result.returncode == 0, result.stderr
    families = {f["name"]: f for f in json.loads(result.stdout)}
    for family, template, target, remote in EXPECTED.values():
        assert (families[family]["template"], families[family]["lora_target"]) == (template, target)
        assert families[family]["remote_code"] is remote and families[family]["plugin"] == "lfkit.plugins"
    assert "xformers-remote-code-fallback" in families["baichuan2"]["fixes"]
    assert "chatglm3-tokenizer-auto-map" in families["chatglm3"]["fixes"]


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_detect_finds_the_family_and_says_why(fixture, request):
    model = request.getfixturevalue(fixture)
    family, template, target, remote = EXPECTED[fixture]
    result = lfkit("models", "detect", model, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["family"] == family
    assert "model_type" in report["why"]
    assert report["train_defaults"] == {"template": template, "lora_target": target}
    assert bool(report["remote_code_files"]) is remote


def test_detect_refuses_a_folder_without_a_model(tmp_path):
    result = lfkit("models", "detect", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"lfkit: error: {tmp_path} holds no model (no config.json in the folder)"


@pytest.mark.slow
@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_sft_lora_single_picks_the_family_template_and_lora_target(fixture, request, tmp_path, quick_adapter):
    model = request.getfixturevalue(fixture)
    family, template, target, remote = EXPECTED[fixture]
    if remote:
        data = write_alpaca(tmp_path / "data")
        out = tmp_path / "adapter"
        result = lfkit("run", "sft-lora-single", f"model={model}", "dataset=tiny_alpaca", f"dataset_dir={data}",
                       f"output_dir={out}", *QUICK, "trust_remote_code=true")  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    else:  # the same run on tiny_alpaca, made once for this and the train -> merge -> chat test
        out, _data = quick_adapter(model)
    args = json.loads((out / "run.json").read_text())["args"]
    assert (args["template"], args["lora_target"]) == (template, target)
    trained = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert sorted(trained) == sorted(target.split(","))


def test_remote_code_runs_only_with_consent(tmp_path, tiny_chatglm3):
    out = tmp_path / "adapter"
    result = lfkit("run", "sft-lora-single", f"model={tiny_chatglm3}", "dataset=telecom_demo", f"output_dir={out}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"lfkit: error: model {tiny_chatglm3} is chatglm3, which runs Python code from its folder "
        "(configuration_chatglm.py, modeling_chatglm.py, tokenization_chatglm.py); "
        "read it, then pass trust_remote_code=true to allow it"
    )
    assert not out.exists()


LOAD_TOKENIZER = """
    import json
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained({path!r}, trust_remote_code=True)
        print("REPORT " + json.dumps({{"ok": True, "ids": tokenizer("你好")["input_ids"]}}))
    except Exception as exc:
        print("REPORT " + json.dumps({{"ok": False, "error": f"{{type(exc).__name__}}: {{exc}}"}}))
"""


def test_chatglm3_tokenizer_loads_from_a_local_folder_without_editing_it(tmp_path, tiny_chatglm3):
    config = tiny_chatglm3 / "tokenizer_config.json"
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    code = LOAD_TOKENIZER.format(path=str(tiny_chatglm3))
    # the failure the DCU field guide met, in the real transformers: no auto_map, no class (transformers 5
    # then falls back to a backend it cannot build; 4.52 names the missing class)
    broken = probe(code, env=clean_env(LFKIT_DISABLE_PATCHES="chatglm3-tokenizer-auto-map"), cwd=tmp_path)
    said = ("Couldn't instantiate the backend tokenizer", "Tokenizer class ChatGLMTokenizer does not exist")
    assert broken["ok"] is False and any(words in broken["error"] for words in said), broken["error"]
    fixed = probe(code, env=clean_env(), cwd=tmp_path)
    assert fixed["ok"] is True and fixed["ids"]
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before
    assert "auto_map" not in json.loads(config.read_text())


def test_baichuan2_tokenizer_sp_model_is_mended(tmp_path, tiny_baichuan2_spm):
    code = LOAD_TOKENIZER.format(path=str(tiny_baichuan2_spm))
    broken = probe(code, env=clean_env(LFKIT_DISABLE_PATCHES="baichuan2-tokenizer-sp-model"), cwd=tmp_path)
    # transformers 5 reports the missing sp_model through a property ("'property' object cannot be interpreted"),
    # 4.52 through the vocab_size property that reads it ("BaichuanTokenizer has no attribute vocab_size")
    said = ("sp_model", "'property' object", "has no attribute vocab_size")
    assert broken["ok"] is False and any(words in broken["error"] for words in said), broken["error"]
    fixed = probe(code, env=clean_env(), cwd=tmp_path)
    assert fixed["ok"] is True and fixed["ids"]


def test_the_baichuan2_template_is_registered_into_llamafactory(tmp_path, tiny_llama):
    report = probe(
        f"""
        import json
        import lfkit
        from llamafactory.data.template import TEMPLATES
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tiny_llama)!r})
        ids, answer = TEMPLATES["baichuan2"].encode_oneturn(
            tokenizer, [{{"role": "user", "content": "你好"}}, {{"role": "assistant", "content": "好"}}])
        print("REPORT " + json.dumps({{"prompt": tokenizer.decode(ids), "answer": tokenizer.decode(answer),
                                       "efficient_eos": TEMPLATES["baichuan2"].efficient_eos}}))
        """,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert report["prompt"] == "<reserved_106>你好<reserved_107>"
    assert report["answer"] == "好" and report["efficient_eos"] is True


@pytest.mark.slow
def test_chatglm3_chat_works_on_transformers_without_extract_past(tmp_path, tiny_chatglm3):
    argv = ["run", "chat", f"model={tiny_chatglm3}", "trust_remote_code=true", "prompt=你好", "do_sample=false",
            "max_new_tokens=4"]  # fmt: skip
    broken = lfkit(*argv, env=clean_env(LFKIT_DISABLE_PATCHES="chatglm3-generation-past"))
    assert broken.returncode != 0
    assert "_extract_past_from_model_output" in broken.stderr
    fixed = lfkit(*argv)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert any(line.startswith("=> ") for line in fixed.stdout.splitlines())


def test_a_transformers_too_old_for_gemma_is_one_clear_line(tmp_path, tiny_gemma):
    from conftest import make_dist

    # transformers' metadata says 4.37.2 (the release before GemmaTokenizer), as on seed 000's machine
    site = make_dist(tmp_path / "site", "transformers", "4.37.2", {}, {})
    result = lfkit("run", "sft-lora-single", f"model={tiny_gemma}", "dataset=telecom_demo",
                   f"output_dir={tmp_path / 'o'}", env=clean_env(PYTHONPATH=str(site)))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "lfkit: error: gemma models need transformers>=4.38.0 (GemmaTokenizer and the Gemma model arrived in "
        "transformers 4.38.0; older environments must upgrade); installed: 4.37.2. Fix: pip install 'transformers>=4.38.0'"
    )


@pytest.mark.slow
def test_a_third_party_family_plugin_drives_detection_and_runs(tmp_path, qwen2_site, tiny_qwen2):
    env = clean_env(PYTHONPATH=str(qwen2_site))
    listed = {f["name"]: f for f in json.loads(lfkit("models", "--json", env=env).stdout)}
    assert listed["qwen2"]["plugin"] == "qwen2" and listed["qwen2"]["template"] == "qwen"
    detected = json.loads(lfkit("models", "detect", tiny_qwen2, "--json", env=env).stdout)
    assert (detected["family"], detected["plugin"]) == ("qwen2", "qwen2")

    data = write_alpaca(tmp_path / "data")
    out = tmp_path / "adapter"
    result = lfkit("run", "sft-lora-single", f"model={tiny_qwen2}", "dataset=tiny_alpaca", f"dataset_dir={data}",
                   f"output_dir={out}", *QUICK, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    args = json.loads((out / "run.json").read_text())["args"]
    assert (args["template"], args["lora_target"]) == ("qwen", "q_proj,k_proj,v_proj,o_proj")
    trained = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert sorted(trained) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    # without the plugin, the same folder is nobody's family
    assert json.loads(lfkit("models", "detect", tiny_qwen2, "--json").stdout)["family"] is None

import json

import pytest

pytestmark = pytest.mark.both_stacks


@pytest.mark.parametrize("family,model_type", [("llama", "llama"), ("gemma", "gemma")])
def test_tiny_models_load_offline_and_generate(family, model_type, request):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(f"tiny_{family}")
    assert json.loads((path / "config.json").read_text())["model_type"] == model_type
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = "回答中国电信手机用户的问题,宽带续费有什么优惠,应该怎么做？"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless on Chinese
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) < 500_000
    out = model.generate(**tokenizer(text, return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > len(ids)


def test_the_cache_builds_once(tmp_path):
    from lfkit.tiny_models import tiny_model

    first = tiny_model("llama", cache_dir=tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model("llama", cache_dir=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging folder left behind


def test_unknown_family(tmp_path):
    from lfkit.tiny_models import build_tiny_model

    with pytest.raises(ValueError, match="no tiny model for family 'mamba'"):
        build_tiny_model("mamba", tmp_path / "m")

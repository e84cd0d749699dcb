"""Tiny stand-ins for remote-code model families (tests only), built from tests/fixtures/remote_code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "remote_code"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def build_baichuan2(out: Path, tokenizer_from: Path, alibi: bool = False) -> Path:
    """A Baichuan2-style model folder (7B layout, or early-13B with ALiBi) with random weights."""
    import torch
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    out.mkdir(parents=True)
    for source in (FIXTURES / "baichuan2").glob("*.py"):
        shutil.copy(source, out / source.name)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, out / name)
    vocab = json.loads((tokenizer_from / "config.json").read_text())["vocab_size"]
    model_file = "modeling_baichuan_alibi" if alibi else "modeling_baichuan"
    model_class = "BaichuanAlibiForCausalLM" if alibi else "BaichuanForCausalLM"
    config = {
        "architectures": [model_class],
        "model_type": "baichuan",
        "auto_map": {
            "AutoConfig": "configuration_baichuan.BaichuanConfig",
            "AutoModelForCausalLM": f"{model_file}.{model_class}",
        },
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    # The classes straight from their files: the Auto* registries of this process may
    # already map BaichuanConfig to another variant's model class.
    config_class = get_class_from_dynamic_module("configuration_baichuan.BaichuanConfig", out)
    model_class = get_class_from_dynamic_module(f"{model_file}.{model_class}", out)
    torch.manual_seed(0)
    model = model_class(config_class.from_pretrained(out))
    model.save_pretrained(out)
    return out

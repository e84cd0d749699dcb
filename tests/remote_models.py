"""Tiny stand-ins for remote-code model families (tests only), built from tests/fixtures/remote_code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "remote_code"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _sentencepiece_tokenizer(out: Path) -> int:
    """Baichuan2's tokenizer files: a small sentencepiece model and a config naming the remote class."""
    import sentencepiece as spm

    lines = ["回答中国电信手机用户的问题,宽带提速包在哪里开通,应该怎么做？", "取消方式_68|业务简介_111|9.9|开通方式_98"]
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(lines * 50), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=68, hard_vocab_limit=False,
        character_coverage=1.0, user_defined_symbols=["<reserved_106>", "<reserved_107>"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    config = {
        "tokenizer_class": "BaichuanTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaichuanTokenizer", None]},
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": 512,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()


def build_baichuan2(out: Path, tokenizer_from: Path | None, alibi: bool = False) -> Path:
    """A Baichuan2-style model folder (7B layout, or early-13B with ALiBi) with random weights.

    With ``tokenizer_from`` the folder gets that fast tokenizer; without, Baichuan2's own
    sentencepiece BaichuanTokenizer (remote code), as upstream ships it.
    """
    import torch
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    out.mkdir(parents=True)
    for source in (FIXTURES / "baichuan2").glob("*.py"):
        if source.name != "tokenization_baichuan.py" or tokenizer_from is None:
            shutil.copy(source, out / source.name)
    if tokenizer_from is None:
        vocab = _sentencepiece_tokenizer(out)
    else:
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


CHATGLM_SPECIAL = ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def build_chatglm3(out: Path, tokenizer_from: Path) -> Path:
    """A ChatGLM3-style model folder: remote code, and a tokenizer_config.json without auto_map (as upstream)."""
    import torch
    from transformers import PreTrainedTokenizerFast
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    out.mkdir(parents=True)
    for source in (FIXTURES / "chatglm3").glob("*.py"):
        shutil.copy(source, out / source.name)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_from)
    tokenizer.add_special_tokens({"additional_special_tokens": CHATGLM_SPECIAL})
    tokenizer.save_pretrained(out)
    (out / "tokenizer.json").rename(out / "chatglm_tokenizer.json")
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    tokenizer_config.pop("auto_map", None)
    tokenizer_config["tokenizer_class"] = "ChatGLMTokenizer"
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    config = {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "padded_vocab_size": len(tokenizer),
        "hidden_size": 64,
        "ffn_hidden_size": 128,
        "num_layers": 2,
        "num_attention_heads": 4,
        "torch_dtype": "float32",
        # as ChatGLM3-6B's own config.json: its output_layer is a head of its own (transformers 4.x
        # would otherwise tie it to the word embeddings, and refuse to save the shared tensors)
        "tie_word_embeddings": False,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    config_class = get_class_from_dynamic_module("configuration_chatglm.ChatGLMConfig", out)
    model_class = get_class_from_dynamic_module("modeling_chatglm.ChatGLMForConditionalGeneration", out)
    torch.manual_seed(0)
    model_class(config_class.from_pretrained(out)).save_pretrained(out)
    return out


def build_qwen2(out: Path, tokenizer_from: Path) -> Path:
    """A tiny Qwen2 model (transformers' own classes) for the example third-party family plugin."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_from)
    # The qwen template's turn markers, as Qwen2's own tokenizer has them.
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

"""Tiny, randomly initialised models with a locally trained tokenizer.

No hub is reachable from CI or from an air-gapped cluster node, so the offline
demo and the tests build their own models: a few layers, a byte-level BPE
tokenizer (one piece per Chinese character) trained here on Chinese and English
text, saved in the ordinary
Hugging Face layout that LLaMA-Factory loads like any other local model folder.
Built once per (family, builder version, transformers version), then cached.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .paths import lfkit_home

BUILDER_VERSION = 3  # 3: the tokenizer declares no token_type_ids

# Enough text for a byte-level BPE to learn common Chinese and English pieces.
_CORPUS = [
    "回答中国电信手机用户的问题,{q},应该怎么做？",
    "你好，请问你能帮我查一下明天的天气吗？",
    "当然，你在哪个城市呢？我在上海。",
    "好的，根据天气预报，明天上海多云转阴，气温在20到25摄氏度之间。",
    "取消方式 开通方式 业务简介 办理条件 资费 流量包 套餐 会员 定向流量 宽带 话费 余额 积分",
    "百度专属 视频会员 畅享套餐 宽带提速包 国际漫游 副卡 亲情号 来电显示 彩铃 天翼云盘 爱奇艺 腾讯视频 升级包",
    "夜间流量 语音包 短信包 积分兑换 话费充值 流量日包 我想取消 怎样 我的 我要开通 在哪里 介绍一下 是什么",
    "给我介绍 包含哪些内容 这个业务 多少钱 怎么收费 请问要花 退订 关闭 办理 说明",
    "Human: Assistant: System: User: the model answers the question about the package.",
    "How do I cancel the monthly data plan? What does it cost? Where can I open it?",
]
_QUESTIONS = [
    "9元百度专属定向流量包如何取消",
    "7天5g视频会员流量包怎么开通，多少钱",
    "宽带续费有什么优惠",
    "话费余额怎么查询",
    "积分可以兑换什么",
    "国际漫游怎么开通",
]

FAMILIES = {
    "llama": {"special": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}, "extra": []},
    "gemma": {
        "special": {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
        "extra": ["<start_of_turn>", "<end_of_turn>"],
    },
}


def _corpus() -> list[str]:
    lines = [line.format(q=q) for line in _CORPUS for q in _QUESTIONS]
    labels = [f"{kind}_{n}" for kind in ("取消方式", "开通方式", "业务简介") for n in range(120)]
    lines += ["|".join(labels[i : i + 4]) for i in range(0, len(labels), 4)]
    return lines


def _train_tokenizer(family: str, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    special = [spec["special"][k] for k in ("unk", "bos", "eos", "pad")] + spec["extra"]
    tokenizer = Tokenizer(models.BPE(unk_token=spec["special"]["unk"]))
    # One token per Chinese character: a word then reads the same in any sentence,
    # which a model this small needs to generalise over wording.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("[\u3400-\u9fff]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec["special"]["bos"],
        eos_token=spec["special"]["eos"],
        unk_token=spec["special"]["unk"],
        pad_token=spec["special"]["pad"],
        additional_special_tokens=spec["extra"] or None,
        # a decoder-only model takes no token_type_ids (transformers 4.x's fast tokenizer emits them by
        # default, and generate() then refuses them), as the real llama and gemma tokenizers declare
        model_input_names=["input_ids", "attention_mask"],
    )


def _config(family: str, tokenizer, hidden: int, layers: int):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(tie_word_embeddings=False, **common)
    from transformers import GemmaConfig

    return GemmaConfig(head_dim=hidden // 4, **common)


def build_tiny_model(family: str, out_dir: Path, *, hidden: int = 128, layers: int = 2, vocab_size: int = 1024) -> Path:
    """Write a tiny model of ``family`` into ``out_dir`` (which must not exist)."""
    import torch
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"no tiny model for family {family!r}; known: {', '.join(FAMILIES)}")
    tokenizer = _train_tokenizer(family, vocab_size)
    config = _config(family, tokenizer, hidden, layers)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "lfkit_tiny.json").write_text(json.dumps({"family": family, "builder": BUILDER_VERSION}))
    return out_dir


def tiny_model(family: str = "llama", cache_dir: Path | None = None) -> Path:
    """Path of a cached tiny model of ``family``, building it on first use."""
    import transformers

    root = cache_dir or lfkit_home() / "tiny-models"
    path = root / f"{family}-b{BUILDER_VERSION}-tf{transformers.__version__}"
    if (path / "lfkit_tiny.json").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename: a crashed build never looks like a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
    try:
        build_tiny_model(family, staging / "model")
        try:
            os.replace(staging / "model", path)
        except OSError:
            if not (path / "lfkit_tiny.json").is_file():  # not a concurrent builder's win
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path

"""Local stand-ins for the hub repositories LLaMA-Factory's own test suite asks for.

LLaMA-Factory's tests name hub ids (``llamafactory/tiny-random-Llama-3``,
``llamafactory/tiny-supervised-dataset``, ``REMOTE:llamafactory/demo_data``, ...).
transformers, peft and datasets take an id that is also a local folder as that
folder, so the suite runs from a working folder that holds ``llamafactory/<name>``
folders; ``REMOTE:`` dataset folders are fetched with ``hf_hub_download``, which
offline answers from the hub cache, so that file is laid into a private
``HF_HOME`` as the hub client would have cached it.

The model is shaped like the one the suite expects: a Llama-3-style tokenizer
(byte-level BPE, ``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|eot_id|>``)
with Llama-3's chat template, model_type ``llama`` and vocab 128256, tiny hidden
sizes. It is exactly the kind of local folder that plain ``llamafactory-cli``
users train, which lfkit must leave to LLaMA-Factory's own choices.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

BUILDER_VERSION = 1
LLAMA3 = "llamafactory/tiny-random-Llama-3"
LLAMA3_LORA = "llamafactory/tiny-random-Llama-3-lora"
LLAMA3_VALUEHEAD = "llamafactory/tiny-random-Llama-3-valuehead"
LLAMA3_PISSA = "llamafactory/tiny-random-Llama-3-pissa"
TINY_DATA = "llamafactory/tiny-supervised-dataset"
DEMO_DATA = "llamafactory/demo_data"

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_SPECIAL += [f"<|reserved_special_token_{i}|>" for i in range(8)]
# Llama-3 Instruct's chat template, in its documented form.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_VOCAB = 128256
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The demo sets LLaMA-Factory's tests read as subsets of llamafactory/demo_data, with their dataset_info entries.
SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}
DEMO_SUBSETS = {
    "alpaca_en_demo": {},
    "c4_demo": {"columns": {"prompt": "text"}},
    "dpo_en_demo": {
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "kto_en_demo": {
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": SHAREGPT_TAGS,
    },
    "system_chat": {"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": SHAREGPT_TAGS},
}


def _corpus(lf_data: Path) -> list[str]:
    lines = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json"):
        for row in json.loads((lf_data / name).read_text(encoding="utf-8"))[:300]:
            lines += [row.get("instruction", ""), row.get("input", ""), row.get("output", "")]
    lines += ["How are you", "I am fine!", "你好", "很高兴认识你！", "user assistant system"]
    return [line for line in lines if line]


def build_tokenizer(lf_data: Path, vocab_size: int = 2000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LLAMA3_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(lf_data), trainer=trainer)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def build_llama3(out: Path, lf_data: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = build_tokenizer(lf_data)
    config = LlamaConfig(
        vocab_size=LLAMA3_VOCAB,
        hidden_size=16,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_lora(base: Path, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base)
    # init_lora_weights=False: B is not zero, so a merged model differs from the base.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    _fix_base_path(out, base)


def build_pissa(base: Path, out: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="pissa", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out / "pissa_init")
    peft_model.base_model.model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, out / name)
    _fix_base_path(out / "pissa_init", base)


def _fix_base_path(adapter: Path, base: Path) -> None:
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = LLAMA3
    config_file.write_text(json.dumps(config, indent=2))


def build_valuehead(base: Path, out: Path, base_out: Path) -> None:
    """A value-head checkpoint, and the same head in the base folder (LLaMA-Factory loads
    ``value_head.safetensors`` from the model it starts from)."""
    import torch
    from safetensors.torch import load_file, save_file

    torch.manual_seed(2)
    head = {"v_head.summary.weight": torch.randn(1, 16) * 0.02, "v_head.summary.bias": torch.zeros(1)}
    shutil.copytree(base, out)
    weights = load_file(str(out / "model.safetensors"))
    save_file({**weights, **head}, str(out / "model.safetensors"), metadata={"format": "pt"})
    save_file(head, str(base_out / "value_head.safetensors"), metadata={"format": "pt"})


def build_datasets(root: Path, lf_data: Path) -> None:
    tiny = root / TINY_DATA
    tiny.mkdir(parents=True)
    rows = json.loads((lf_data / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:300]
    (tiny / "train.json").write_text(json.dumps(rows, ensure_ascii=False))

    demo = root / DEMO_DATA
    demo.mkdir(parents=True)
    for name in ("alpaca_en_demo.json", "c4_demo.jsonl", "dpo_en_demo.json", "kto_en_demo.json"):
        shutil.copy(lf_data / name, demo / name)
    (demo / "system_chat.json").write_text(json.dumps(_system_chat(lf_data), ensure_ascii=False))
    files = {"alpaca_en_demo": "alpaca_en_demo.json", "c4_demo": "c4_demo.jsonl", "dpo_en_demo": "dpo_en_demo.json",
             "kto_en_demo": "kto_en_demo.json", "system_chat": "system_chat.json"}  # fmt: skip
    configs = "".join(
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {file}\n" for name, file in files.items()
    )
    (demo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    info = {
        name: {"hf_hub_url": DEMO_DATA, "subset": name, "split": "train", **extra}
        for name, extra in DEMO_SUBSETS.items()
    }
    (demo / "dataset_info.json").write_text(json.dumps(info, indent=2))


def _system_chat(lf_data: Path) -> list[dict]:
    """Multi-turn conversations with a system prompt, built from the alpaca demo rows."""
    rows = json.loads((lf_data / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:64]
    chats = []
    for i in range(0, len(rows) - 1, 2):
        a, b = rows[i], rows[i + 1]
        chats.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": a["instruction"]},
                    {"role": "assistant", "content": a["output"]},
                    {"role": "user", "content": b["instruction"]},
                    {"role": "assistant", "content": b["output"]},
                ]
            }
        )
    return chats


def cache_remote_dataset_info(hf_home: Path, root: Path) -> None:
    """Lay dataset_info.json of the demo data into the hub cache, where hf_hub_download finds it offline."""
    repo = hf_home / "hub" / f"datasets--{DEMO_DATA.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copy(root / DEMO_DATA / "dataset_info.json", snapshot / "dataset_info.json")


def build(root: Path, lf_data: Path) -> Path:
    """Every stand-in under ``root`` (the suite's working folder); ``root/hf_home`` is its HF_HOME."""
    marker = root / "standins.json"
    if marker.is_file() and json.loads(marker.read_text()).get("builder") == BUILDER_VERSION:
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    base = root / LLAMA3
    build_llama3(base, lf_data)
    build_lora(base, root / LLAMA3_LORA)
    build_pissa(base, root / LLAMA3_PISSA)
    build_valuehead(base, root / LLAMA3_VALUEHEAD, base)
    build_datasets(root, lf_data)
    cache_remote_dataset_info(root / "hf_home", root)
    marker.write_text(json.dumps({"builder": BUILDER_VERSION}))
    return root

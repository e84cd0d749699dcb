"""A family is claimed only on evidence that tells it from its look-alikes.

Folders shaped like the real checkpoints (config.json and the tokenizer files that
name their special tokens, as published): many share model_type ``llama`` without
being LLaMA-2, and ChatGLM2 / GLM-4 share ``chatglm`` with ChatGLM3, Baichuan-1
shares ``baichuan`` with Baichuan2. An unrecognised folder gets no defaults, and
``lfkit models detect`` says which evidence was missing.
"""

import json
from pathlib import Path

import pytest

from conftest import BIN, FIXTURES, clean_env, run

LLAMA3_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _tokenizer_config(bos, eos, added=(), cls="PreTrainedTokenizerFast", extra=None):
    decoder = {str(100 + i): {"content": t, "special": True} for i, t in enumerate(added)}
    return {
        "tokenizer_class": cls,
        "bos_token": bos,
        "eos_token": eos,
        "added_tokens_decoder": decoder,
        **(extra or {}),
    }


def _llama(vocab, arch="LlamaForCausalLM", model_type="llama"):
    return {"model_type": model_type, "architectures": [arch], "vocab_size": vocab, "hidden_size": 4096}


SHAPES = {
    # folder name: (config.json, tokenizer_config.json, extra files, expected family)
    "Llama-2-7b-hf": (
        json.loads((FIXTURES / "model_configs" / "Llama-2-7b-hf" / "config.json").read_text()),
        _tokenizer_config({"content": "<s>"}, {"content": "</s>"}, cls="LlamaTokenizer"),
        {},
        "llama2",
    ),
    # the same LLaMA-2 weights under a neutral name: vocab 32000 and <s> / </s> still say LLaMA-2
    "base-model": (_llama(32000), _tokenizer_config("<s>", "</s>", cls="LlamaTokenizer"), {}, "llama2"),
    "Meta-Llama-3-8B-Instruct": (
        _llama(128256),
        _tokenizer_config("<|begin_of_text|>", "<|eot_id|>", LLAMA3_TOKENS),
        {},
        None,
    ),  # fmt: skip
    # a Llama-3 fine-tune whose name says llama2: the tokenizer's Llama-3 tokens win
    "my-llama2-style-finetune": (
        _llama(128256),
        _tokenizer_config("<|begin_of_text|>", "<|eot_id|>", LLAMA3_TOKENS),
        {},
        None,
    ),  # fmt: skip
    "Qwen2-7B-Instruct": (
        _llama(152064, "Qwen2ForCausalLM", "qwen2"),
        _tokenizer_config(None, "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
        {},
        None,
    ),  # fmt: skip
    "CausalLM-14B": (
        _llama(152064),
        _tokenizer_config(None, "<|endoftext|>", ["<|endoftext|>", "<|im_start|>"]),
        {},
        None,
    ),  # fmt: skip
    "Yi-6B": (_llama(64000), _tokenizer_config("<|startoftext|>", "<|endoftext|>", cls="LlamaTokenizer"), {}, None),
    "deepseek-llm-7b-base": (
        _llama(102400),
        _tokenizer_config("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", cls="LlamaTokenizerFast"),
        {},
        None,
    ),  # fmt: skip
    "Mistral-7B-v0.1": (
        _llama(32000, "MistralForCausalLM", "mistral"),
        _tokenizer_config("<s>", "</s>", cls="LlamaTokenizer"),
        {},
        None,
    ),  # fmt: skip
    "gemma-2b": (
        json.loads((FIXTURES / "model_configs" / "gemma-2b" / "config.json").read_text()),
        _tokenizer_config("<bos>", "<eos>", cls="GemmaTokenizer"),
        {},
        "gemma",
    ),  # fmt: skip
    "chatglm3-6b": (
        json.loads((FIXTURES / "model_configs" / "chatglm3-6b" / "config.json").read_text()),
        {"tokenizer_class": "ChatGLMTokenizer"},
        {
            "tokenization_chatglm.py": 'role_special_tokens = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]\n'
        },
        "chatglm3",
    ),
    # ChatGLM2: the same model_type and vocabulary, no role tokens in its tokenizer
    "local-glm": (
        json.loads((FIXTURES / "model_configs" / "chatglm3-6b" / "config.json").read_text()),
        {"tokenizer_class": "ChatGLMTokenizer"},
        {"tokenization_chatglm.py": 'special_tokens = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]\n'},
        None,
    ),
    "glm-4-9b-chat": (
        {
            **json.loads((FIXTURES / "model_configs" / "chatglm3-6b" / "config.json").read_text()),
            "padded_vocab_size": 151552,
        },
        {
            "tokenizer_class": "ChatGLM4Tokenizer",
            "added_tokens_decoder": {"151336": {"content": "<|user|>"}, "151338": {"content": "<|observation|>"}},
        },
        {"tokenization_chatglm.py": "class ChatGLM4Tokenizer:\n    pass\n"},
        None,
    ),  # fmt: skip
    "Baichuan2-7B-Chat": (
        json.loads((FIXTURES / "model_configs" / "Baichuan2-7B-Chat" / "config.json").read_text()),
        {"tokenizer_class": "BaichuanTokenizer"},
        {},
        "baichuan2",
    ),  # fmt: skip
    "baichuan-7B": (
        {"model_type": "baichuan", "architectures": ["BaiChuanForCausalLM"], "vocab_size": 64000},
        {"tokenizer_class": "BaiChuanTokenizer"},
        {},
        None,
    ),  # fmt: skip
}


def _folder(root: Path, name: str) -> Path:
    config, tokenizer_config, files, _ = SHAPES[name]
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_shape_is_claimed_only_by_its_own_family(name, tmp_path):
    from lfkit.plugin_manager import get_manager
    from lfkit.plugins.detect import detect

    detection = detect(_folder(tmp_path, name), get_manager().models.in_registration_order())
    expected = SHAPES[name][3]
    assert (detection.family.name if detection.family else None) == expected, detection.why()


def test_detect_says_which_llama2_evidence_a_llama3_folder_lacks(tmp_path):
    folder = _folder(tmp_path, "Meta-Llama-3-8B-Instruct")
    result = run([BIN / "lfkit", "models", "detect", folder, "--json"], env=clean_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["family"] is None and report["train_defaults"] == {}
    assert report["why"] == (
        "not llama2: its tokenizer has <|begin_of_text|>, <|start_header_id|>, which llama2 has not"
    )
    baichuan = _folder(tmp_path, "baichuan-7B")
    report = json.loads(run([BIN / "lfkit", "models", "detect", baichuan, "--json"], env=clean_env()).stdout)
    assert report["family"] is None
    assert report["why"] == (
        "not baichuan2: config.json vocab_size is 64000, not 125696; "
        "the folder name 'baichuan-7B' does not match 'baichuan-?2'"
    )
    # the same words without --json, at a terminal width wide enough not to fold them
    text = run([BIN / "lfkit", "models", "detect", baichuan], env=clean_env(COLUMNS="400"))
    assert text.stdout.strip() == f"{baichuan}: no family recognised ({report['why']}); give template= and lora_target="


def test_models_lists_what_llama2_is_recognised_by():
    result = run([BIN / "lfkit", "models", "--json"], env=clean_env())
    families = {f["name"]: f for f in json.loads(result.stdout)}
    recognised = families["llama2"]["recognised_by"]
    assert recognised[:2] == ["model_type=llama", "architecture=LlamaForCausalLM"]
    assert recognised[2] == "and one of: vocab_size=32000, tokenizer bos_token=<s> eos_token=</s>, name~llama-?2"
    assert recognised[3].startswith("not with tokens <|begin_of_text|>")

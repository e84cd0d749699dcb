"""ChatGLM3: query_key_value (as the DCU field guide trains it), the chatglm3 template, remote code, and two mends.

- A local ChatGLM3 folder's tokenizer_config.json names ``ChatGLMTokenizer`` but has
  no ``auto_map``, so AutoTokenizer cannot find the class (DCU users added the entry
  by hand, THUDM/ChatGLM3 discussion 894). ``chatglm3-tokenizer-auto-map`` supplies
  it in memory when the folder defines that class; the user's files stay as they are.
- ChatGLM3's generation calls ``_extract_past_from_model_output``, which
  transformers 4.49 removed (AttributeError on the first generated token).
  ``chatglm3-generation-past`` puts the method back on GenerationMixin, answering
  both of the calling conventions ChatGLM3's revisions used.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lfkit.patching import Patch, PatchContext, SkipPatch
from lfkit.state_files import read_bounded

from .family import ModelFamily

TOKENIZER_CLASS = "ChatGLMTokenizer"


def _defining_module(folder: Path, class_name: str) -> str | None:
    pattern = re.compile(rf"^class\s+{re.escape(class_name)}\b", re.MULTILINE)
    for source in sorted(folder.glob("*.py")):
        try:
            if pattern.search(read_bounded(source).decode("utf-8", errors="replace")):
                return source.stem
        except OSError:
            continue
    return None


def _apply_auto_map(tokenization_auto, ctx: PatchContext) -> str:
    original = tokenization_auto.get_tokenizer_config

    @functools.wraps(original)
    def get_tokenizer_config(pretrained_model_name_or_path, *args, **kwargs):
        config = original(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(str(pretrained_model_name_or_path))
        name = config.get("tokenizer_class")
        auto_map = config.get("auto_map")
        has_entry = isinstance(auto_map, (list, tuple)) or (isinstance(auto_map, dict) and "AutoTokenizer" in auto_map)
        if name and name.removesuffix("Fast") == TOKENIZER_CLASS and not has_entry and folder.is_dir():
            module = _defining_module(folder, name)
            if module is not None:
                config = {**config, "auto_map": {**(auto_map or {}), "AutoTokenizer": [f"{module}.{name}", None]}}
        return config

    ctx.replace(tokenization_auto, "get_tokenizer_config", get_tokenizer_config)
    return "supplies a missing AutoTokenizer auto_map for a local ChatGLMTokenizer folder"


AUTO_MAP_PATCH = Patch(
    id="chatglm3-tokenizer-auto-map",
    why="let AutoTokenizer find ChatGLMTokenizer in a local ChatGLM3 folder with no auto_map in tokenizer_config.json",
    target="transformers.models.auto.tokenization_auto",
    apply=_apply_auto_map,
    reference="https://github.com/THUDM/ChatGLM3/discussions/894",
    requires={"transformers": ">=4.38,<5.7"},
)

_UNSET = object()


def _extract_past_from_model_output(self, outputs, standardize_cache_format=_UNSET):
    # transformers <= 4.48 behaviour: the cache under whichever name the model output uses.
    cache_name, past = "past_key_values", None
    for name in ("past_key_values", "mems", "past_buckets_states"):
        if name in outputs:
            past = outputs[name]
            break
    else:
        if "cache_params" in outputs:
            cache_name, past = "cache_params", outputs["cache_params"]
    if standardize_cache_format is _UNSET:
        return cache_name, past  # the 4.42 - 4.48 signature, used by later ChatGLM3 revisions
    return past  # the <= 4.41 signature, used by ChatGLM3-6B's original modeling_chatglm.py


def _apply_generation_past(generation_utils, ctx: PatchContext) -> str:
    mixin = generation_utils.GenerationMixin
    if hasattr(mixin, "_extract_past_from_model_output"):
        raise SkipPatch("this transformers still has GenerationMixin._extract_past_from_model_output")
    ctx.replace(mixin, "_extract_past_from_model_output", _extract_past_from_model_output)
    return "GenerationMixin._extract_past_from_model_output restored"


GENERATION_PATCH = Patch(
    id="chatglm3-generation-past",
    why="ChatGLM3's generation calls GenerationMixin._extract_past_from_model_output, removed in transformers 4.49",
    target="transformers.generation.utils",
    apply=_apply_generation_past,
    reference="https://github.com/huggingface/transformers/pull/33870 (removal); THUDM/chatglm3-6b modeling_chatglm.py",
    requires={"transformers": ">=4.49,<5.7"},
)

FAMILY = ModelFamily(
    name="chatglm3",
    template="chatglm3",
    lora_target="query_key_value",
    model_types=("chatglm",),
    architectures=("ChatGLMModel", "ChatGLMForConditionalGeneration"),
    names=(r"chatglm-?3",),
    # model_type "chatglm" is ChatGLM2's and GLM-4's too: ChatGLM3's tokenizer defines its role tokens
    # (ChatGLM2's has none), and GLM-4's is another class.
    needs_marker=True,
    marker_tokens=("<|user|>", "<|observation|>"),
    foreign_tokens=("ChatGLM4Tokenizer",),
    remote_code=True,
    fixes=("chatglm3-tokenizer-auto-map", "chatglm3-generation-past"),
    description="THUDM ChatGLM3-6B (base, chat, 32k)",
)


def shape(config: dict):
    """ChatGLM3's parameters from its config.json (its modeling code stays unrun): a fused
    query_key_value with bias and grouped key/value heads, a gated MLP whose first Linear
    yields both halves, and a separate output_layer that LoRA leaves alone."""
    if config.get("model_type") != "chatglm":
        return None
    from lfkit.planning.shapes import ModelShape, decoder_tensors

    h, f, layers = config["hidden_size"], config["ffn_hidden_size"], config["num_layers"]
    vocab = config.get("padded_vocab_size") or config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("kv_channels") or h // heads
    kv_heads = config.get("multi_query_group_num", heads) if config.get("multi_query_attention") else heads
    qkv = heads * head_dim + 2 * kv_heads * head_dim
    bias = config.get("add_bias_linear", False)
    per_layer = [("input_layernorm.weight", (h,), False), ("self_attention.query_key_value.weight", (qkv, h), True)]
    if bias or config.get("add_qkv_bias", False):
        per_layer.append(("self_attention.query_key_value.bias", (qkv,), False))
    per_layer += [
        ("self_attention.dense.weight", (h, heads * head_dim), True),
        ("post_attention_layernorm.weight", (h,), False),
        ("mlp.dense_h_to_4h.weight", (2 * f, h), True),
        ("mlp.dense_4h_to_h.weight", (h, f), True),
    ]
    outside = [("transformer.embedding.word_embeddings.weight", (vocab, h), False),
               ("transformer.output_layer.weight", (vocab, h), True)]  # fmt: skip
    if config.get("post_layer_norm", True):
        outside.append(("transformer.encoder.final_layernorm.weight", (h,), False))
    tensors = decoder_tensors(layers, per_layer, outside, "transformer.encoder.layers")
    # modeling_chatglm.py computes its own loss: the logits upcast to float32 stay alive while their
    # shifted float32 copy goes into the cross-entropy, and backward fills a float32 gradient of the
    # unshifted logits: two float32 copies more than transformers' loss holds.
    # The chat model's modelling code of early 2024 trained with eager attention (its rows in ms-swift's
    # January 2024 benchmark grow as kept scores do; LLaMA-Factory issue 3413: out of memory at
    # cutoff_len 3000 on 24 GB where the base model's code fits); other versions use SDPA.
    own_attention = "ChatGLM3's modelling code of early 2024 (LLaMA-Factory issue 3413)"
    return ModelShape("chatglm", layers, h, f, heads, kv_heads, head_dim, vocab, tensors,
                      source="chatglm3 plugin", excluded_from_lora=("output_layer",), loss_copies=2,
                      own_attention=own_attention)  # fmt: skip
